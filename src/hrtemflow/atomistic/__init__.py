"""Stage 2: atomistic simulation. `structures` builds the starting structures, `potentials` writes the
TB-SMA and Tersoff files (`tbsma` evaluates TB-SMA independently of LAMMPS, for tests), `lammps_run`
drives LAMMPS through one sample's protocol, `md_shard` runs a shard from its spec and writes the
structures and manifest, `analysis` measures the labels, `figure` draws a family's structures."""
