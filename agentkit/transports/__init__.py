"""Transports: each turns its wire format into audio in and out of a `Session`."""
