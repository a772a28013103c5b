"""The terminal app: the WebSocket consumer, its gRPC stream worker and the terminal page."""
