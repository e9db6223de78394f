"""Sans-IO SMTP state machines: bytes in, events out, replies to bytes.

Nothing here imports asyncio or socket. ``protocol.server`` holds
``ServerConnection``; ``protocol.replies`` the table of replies;
``protocol.events`` what ``next_event`` returns.
"""
