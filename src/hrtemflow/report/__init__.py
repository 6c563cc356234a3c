"""What a campaign made: the summary of every stage's products (`summary`)."""
