"""Admission webhook: makes bridge/macvtap VMIs live-migratable and guards migrations."""
