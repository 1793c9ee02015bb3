"""The in-process tier: every layer and both backends, driven through the adapter without FUSE or root."""
