"""The trial tests of tproxy-apikey: ``python -m twisted.trial tests``."""
