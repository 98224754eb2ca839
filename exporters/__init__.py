"""Egress: the draft report to the PACS (DICOM SR over C-STORE) and to the RIS (HL7 ORU over MLLP).

Builders are pure (`sr.build_sr`, `oru.build_oru`); senders (`dicom_sender.send_datasets`,
`mllp.send_hl7`) return plain outcomes (`outcome`) for the outbox to persist. Nothing here imports
`node` or `worker`; import the submodules directly, so a caller pays only for what it uses.
"""
