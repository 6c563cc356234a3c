"""Independent test micrographs and the scorer that judges a bundle on them through `hrtemflow predict`.

    python -m studies.independent --bundle results-bench-chirality/models/chirality --sets all --n 200 \\
        --out studies/out/independent

Every accuracy the pipeline reports is on a test split of images its own imaging code made. This
package makes test micrographs with none of that code (`generate`: ASE, abTEM, numpy and scipy only;
a test checks the imports), one factor of realism at a time and then all together (`factors.yaml`),
writes them as calibrated TIFFs with a `labels.csv` per set, and scores a bundle on them end to end
through the `hrtemflow predict` command line (`score`), writing `factor_table.md` and
`factor_table.json`: what each factor costs against the bundle's own test split.

Objects are whole CNTs (`family: cnt`, scored with a chirality bundle) or Ag/Co nanoalloy particles
(`family: nanoalloy`, built by ASE without MD on an amorphous film, scored with an ordering bundle);
`generate.BUILDERS` maps a family to its scene builder. A tube's label row names its end points, a
particle's its centre and radius; the scorer's regions are boxes along the tube or one box round the
particle.
"""
