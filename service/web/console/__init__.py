"""The operator console at /console/: server-rendered pages over the state interface (no script, no CDN)."""
