"""The inbound HL7 listener: signed reports (ORU^R01 final, MDM^T02) from the RIS over MLLP."""
