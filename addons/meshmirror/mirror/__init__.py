"""The copy machinery: the copy's headers and shadow Host, the breaker, the HTTP/1.1 connection and
pool, the writer, and the sender process (`mirror.sender`) with its child (`mirror.worker`).
Imports nothing of meshmirror outside this package, so the sender child loads only this."""
