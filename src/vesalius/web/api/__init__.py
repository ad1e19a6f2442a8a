"""The JSON API under ``/api``, beside DICOMweb."""
