"""CS361 pipe spike: a newline-delimited TCP request/response pipe."""
