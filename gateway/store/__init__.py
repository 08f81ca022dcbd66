"""Tables, migrations, queries and batches."""
