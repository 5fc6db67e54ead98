//! The binary tree of a degree-\\(d\\) learned sketch (paper Algorithm 2): \\(d\\) leaves (the
//! input rows) and \\(d - 1\\) nodes, each combining two children.
//!
//! This file uses nothing but `core`: the faer-free GPU crate compiles the same file (by
//! `#[path]`), so the CPU and GPU sketches share one topology and one degree check.

/// Where a node's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The input rows \\(x\\).
    Input,
    /// The output of node `i` (nodes are numbered in post-order: children before parents).
    Node(usize),
}

/// Largest degree a tree is built for (\\(p = 128\\) is far past what `f32` can represent).
pub const MAX_TREE_DEGREE: usize = 64;

/// The nodes of the degree-`degree` tree in post-order, each as its `(left, right)` inputs: for
/// degree 4, `[(Input, Input), (Input, Input), (Node(0), Node(1))]`. `None` unless `degree` is
/// a power of two in `2..=`[`MAX_TREE_DEGREE`] (degree 1 has no node).
pub fn tree_nodes(degree: usize) -> Option<Vec<(Src, Src)>> {
    fn build(d: usize, nodes: &mut Vec<(Src, Src)>) -> Src {
        if d == 1 {
            return Src::Input;
        }
        let left = build(d / 2, nodes);
        let right = build(d / 2, nodes);
        nodes.push((left, right));
        Src::Node(nodes.len() - 1)
    }
    if !(2..=MAX_TREE_DEGREE).contains(&degree) || !degree.is_power_of_two() {
        return None;
    }
    let mut nodes = Vec::with_capacity(degree - 1);
    build(degree, &mut nodes);
    Some(nodes)
}
