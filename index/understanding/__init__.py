"""What a text asks for: time and place words, filters. No ML runtime."""
