"""Stage 6: trained bundles on real micrographs (`hrtemflow predict`). `readers` reads every vendor
format with its calibration, `resample` brings a micrograph to a bundle's pixel size, `regions`
cuts it into windows, `predict` drives the networks (through `hrtemflow.learn`), `outputs` writes
the table, CSV, JSON, overlays and denoised images."""
