"""Stage 1: the campaign. The validated config (`config`), its samples cut into shards (`plan`),
where every product lands (`paths`), and the spec file of every job (`specs`), which is the
contract the stages after it run from. Imports only `hrtemflow.core`."""
