"""From candidates to the answer: recommend, the LLM rerank, reasons."""
