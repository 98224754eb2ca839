"""Data for the model: the synthetic chest radiograph benchmark, image preprocessing and site loaders.

Nothing here imports torch: the node's runtime preprocesses images with numpy and Pillow only.

Synthetic studies: `case` samples the ground truth (findings, body, acquisition) from per-study
random `streams`; `phantom` draws the frontal view from `anatomy`, `skeleton`, `vessels`, `lesions`
and `devices` on a `canvas`, `lateral` the lateral view, `exposure` turns density into a radiograph;
`reports` writes the report text; `identifiers` and `dicom_writer` make the DICOM files;
`synthetic` orchestrates and `manifest` holds the manifest.jsonl contract. `site` shifts a set to
another site's detector look and case mix, and `site_reports` writes that site's house style.
`preprocess` turns pixels into the model's patch grid; `loaders` read the formats sites have.
"""
