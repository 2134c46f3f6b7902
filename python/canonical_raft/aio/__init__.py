"""The asyncio engine: the driver of the core's Bridge io, the libraft-wire TCP transport, and the event loop a synchronous program runs it on."""
