"""The aiohttp application around the signalling core: staff, sessions, invites, pages, CLI."""
