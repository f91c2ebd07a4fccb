"""The one client of a PeiTu server's HTTP API."""
