// Prepended to every kernel. What one forward pass shares, written once per pass: the tokens
// in the batch, the position of the first, the first token whose logits are wanted, and how many
// rows of logits (tokens first .. first + m).
struct Step {
    n: u32,
    start: u32,
    first: u32,
    m: u32,
}
