"""In-pod sidecar: repairs guest NICs after a live migration lands on this pod."""
