"""The application layer: every use case behind one authorization check, identifier grammar and error map."""
