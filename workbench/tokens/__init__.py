"""Templates and tokens: render a row to text, tokenize it with labels, batch it for training."""
