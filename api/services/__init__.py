"""What the API views call: each module serves one kind of request."""
