"""The prediction log: every answered row, durable from the answer on (writer, spool), stored with
its true value when one comes back (feedback), and read by monitoring (reader)."""
