"""Egress: the draft report to the PACS (DICOM SR over C-STORE) and to the RIS (HL7 ORU over MLLP).

Builders are pure (`sr.build_sr`, `oru.build_oru`) and never fail over a malformed optional header
value: `sanitize.sanitize_source` / `sanitize.sanitize_study_info` repair, truncate or drop it and
return notes saying what they did. Senders (`dicom_sender.send_datasets`, `mllp.send_hl7`) return
plain outcomes (`outcome`) for the outbox to persist, with a reason that names what failed (a
rejected association, a TLS handshake). Nothing here imports
`node` or `worker`; import the submodules directly, so a caller pays only for what it uses.
"""
