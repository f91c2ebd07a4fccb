"""The admin HTTP server: a thin FastAPI edge over the core (`index.service.PeiTu`)."""
