"""The real-time core: protocol, participants, routing. Knows nothing of HTML, SMS or SQL."""
