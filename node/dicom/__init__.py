"""The DICOM front door: association admission, C-STORE handling, the spool, the association log, study assembly."""
