"""Stage 4: HRTEM images of the MD structures. `views` places a structure (orientation, position,
zoom, support film), `multislice` computes its exit wave (abTEM) and the optics variants of it,
`optics` is the microscope (aberrations, coherence, aperture, phase plate, detector, dose, gain),
`shard` makes one image store from its spec, `figure` draws a contact sheet."""
