//! Memory plan tests: small hand-written graphs for each rule, random DAGs for soundness, and
//! a ResNet-like graph for the numbers.

use super::{plan, Location, MemoryPlan, PlanError, ALIGNMENT};
use qcc_ir::text::parse_graph;
use qcc_ir::{Activation, ConvAttrs, DType, Graph, Op, Padding, Tensor, TensorType, ValueId};

fn planned(src: &str) -> (Graph, MemoryPlan) {
    let g = parse_graph(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let p = plan(&g).unwrap();
    p.verify(&g)
        .unwrap_or_else(|e| panic!("{e}\n{}", p.report(&g)));
    (g, p)
}

fn id(g: &Graph, name: &str) -> ValueId {
    g.value_by_name(name).unwrap()
}

fn loc(g: &Graph, p: &MemoryPlan, name: &str) -> Location {
    p.location(id(g, name))
}

fn arena_offset(g: &Graph, p: &MemoryPlan, name: &str) -> usize {
    match loc(g, p, name) {
        Location::Arena(o) => o,
        other => panic!("%{name} is not in the arena: {other:?}"),
    }
}

#[test]
fn chain_reuses_memory() {
    // Every intermediate is 1*8*16*16*4 = 8192 bytes: two live at a time.
    let (g, p) = planned(
        "graph chain(%x: f32[1,8,16,16]) -> (%d) {
           %a = Relu(%x)
           %b = Relu(%a)
           %c = Relu(%b)
           %d = Relu(%c)
         }",
    );
    assert_eq!(p.naive_bytes, 3 * 8192);
    assert_eq!(p.arena_bytes, 2 * 8192);
    assert_eq!(arena_offset(&g, &p, "a"), arena_offset(&g, &p, "c"));
    assert_ne!(arena_offset(&g, &p, "a"), arena_offset(&g, &p, "b"));
    assert_eq!(loc(&g, &p, "d"), Location::Output(0));
    assert_eq!(loc(&g, &p, "x"), Location::Input(0));
}

#[test]
fn residual_keeps_the_skip_tensor_alive() {
    let (g, p) = planned(
        "graph diamond(%x: f32[1,8,16,16]) -> (%e) {
           %a = Relu(%x)
           %b = Relu(%a)
           %c = Relu(%b)
           %d = Add(%a, %c)
           %e = Relu(%d)
         }",
    );
    let a = arena_offset(&g, &p, "a");
    for other in ["b", "c", "d"] {
        assert_ne!(
            a,
            arena_offset(&g, &p, other),
            "%a shares memory with %{other}"
        );
    }
    assert_eq!(p.arena_bytes, 3 * 8192);
    assert_eq!(p.naive_bytes, 4 * 8192);
}

#[test]
fn views_alias_their_input_and_extend_its_life() {
    let (g, p) = planned(
        "graph views(%x: f32[1,4,4,4]) -> (%y) {
           %a = Relu(%x)
           %r = Reshape(%a) {shape=[1,64]}
           %b = Relu(%x)
           %f = Flatten(%b) {axis=1}
           %y = Add(%r, %f)
         }",
    );
    assert_eq!(
        loc(&g, &p, "r"),
        Location::Alias {
            of: id(&g, "a"),
            offset: 0
        }
    );
    assert_eq!(
        loc(&g, &p, "f"),
        Location::Alias {
            of: id(&g, "b"),
            offset: 0
        }
    );
    // %a itself dies at the Reshape, but %r is read by the Add: %b must not take its place.
    assert_ne!(arena_offset(&g, &p, "a"), arena_offset(&g, &p, "b"));
    assert_eq!(p.arena_bytes, 2 * 256);
}

#[test]
fn view_as_graph_output_makes_the_producer_write_the_output_buffer() {
    let (g, p) = planned(
        "graph out_view(%x: f32[1,4,4,4]) -> (%y) {
           %a = Relu(%x)
           %y = Reshape(%a) {shape=[1,64]}
         }",
    );
    assert_eq!(
        loc(&g, &p, "a"),
        Location::Alias {
            of: id(&g, "y"),
            offset: 0
        }
    );
    assert_eq!(p.arena_bytes, 0);
}

#[test]
fn concat_inputs_are_written_into_their_slices() {
    let (g, p) = planned(
        "graph cat(%x: f32[1,2,4,4]) -> (%y) {
           %a = Relu(%x)
           %b = Sigmoid(%x)
           %c = Concat(%a, %b, %x) {axis=1}
           %y = Relu(%c)
         }",
    );
    let c = id(&g, "c");
    assert_eq!(loc(&g, &p, "a"), Location::Alias { of: c, offset: 0 });
    assert_eq!(loc(&g, &p, "b"), Location::Alias { of: c, offset: 128 });
    // A graph input is copied into its slice.
    assert_eq!(loc(&g, &p, "x"), Location::Input(0));
    assert_eq!(p.arena_bytes, 384);
}

#[test]
fn nested_concats_and_concat_into_an_output() {
    let (g, p) = planned(
        "graph cat2(%x: f32[1,2,4,4]) -> (%c2) {
           %a = Relu(%x)
           %b = Tanh(%x)
           %c1 = Concat(%a, %b) {axis=1}
           %d = Sigmoid(%x)
           %c2 = Concat(%d, %c1) {axis=1}
         }",
    );
    let out = id(&g, "c2");
    assert_eq!(loc(&g, &p, "d"), Location::Alias { of: out, offset: 0 });
    assert_eq!(
        loc(&g, &p, "c1"),
        Location::Alias {
            of: out,
            offset: 128
        }
    );
    assert_eq!(
        loc(&g, &p, "b"),
        Location::Alias {
            of: out,
            offset: 256
        }
    );
    assert_eq!(p.arena_bytes, 0);
}

#[test]
fn concat_copies_when_a_slice_is_not_contiguous_or_the_input_is_shared() {
    // Batch 2: a channel slice is two separate ranges.
    let (g, p) = planned(
        "graph cat_b2(%x: f32[2,2,4,4]) -> (%y) {
           %a = Relu(%x)
           %b = Sigmoid(%x)
           %c = Concat(%a, %b) {axis=1}
           %y = Relu(%c)
         }",
    );
    assert!(matches!(loc(&g, &p, "a"), Location::Arena(_)));
    assert!(matches!(loc(&g, &p, "b"), Location::Arena(_)));
    // %a is also read by the Add: it must keep its own bytes.
    let (g, p) = planned(
        "graph cat_shared(%x: f32[1,2,4,4]) -> (%y) {
           %a = Relu(%x)
           %b = Sigmoid(%x)
           %c = Concat(%a, %b) {axis=1}
           %s = Add(%a, %b)
           %y = Concat(%c, %s) {axis=1}
         }",
    );
    assert!(matches!(loc(&g, &p, "a"), Location::Arena(_)));
    assert!(matches!(loc(&g, &p, "b"), Location::Arena(_)));
    assert_eq!(
        loc(&g, &p, "s"),
        Location::Alias {
            of: id(&g, "y"),
            offset: 256
        }
    );
}

#[test]
fn split_outputs_are_slices_when_contiguous() {
    let (g, p) = planned(
        "graph split(%x: f32[1,4,4,4]) -> (%y) {
           %a = Relu(%x)
           %s0, %s1 = Split(%a) {axis=1, sizes=[1,3]}
           %t = Relu(%s1)
           %y = Relu(%t)
         }",
    );
    let a = id(&g, "a");
    assert_eq!(loc(&g, &p, "s0"), Location::Alias { of: a, offset: 0 });
    assert_eq!(loc(&g, &p, "s1"), Location::Alias { of: a, offset: 64 });
}

#[test]
fn graph_outputs_stay_out_of_the_arena_even_when_read_later() {
    let (g, p) = planned(
        "graph outs(%x: f32[1,8]) -> (%a, %b, %x, %k, %a) {
           %k = const f32[2] dense<1.0, 2.0>
           %a = Relu(%x)
           %b = Relu(%a)
         }",
    );
    assert_eq!(loc(&g, &p, "a"), Location::Output(0));
    assert_eq!(loc(&g, &p, "b"), Location::Output(1));
    assert_eq!(p.arena_bytes, 0);
    let copies: Vec<(usize, String)> = p
        .output_copies
        .iter()
        .map(|c| (c.output, g.value(c.from).name.clone()))
        .collect();
    let expected = [(2, "x"), (3, "k"), (4, "a")].map(|(j, n)| (j, n.to_string()));
    assert_eq!(copies, expected);
    assert_eq!(loc(&g, &p, "k"), Location::Weight(0));
}

#[test]
fn offsets_are_aligned_and_weights_are_packed() {
    let (g, p) = planned(
        "graph odd(%x: f32[1,3,5,7]) -> (%y) {
           %w1 = const f32[3] splat<1.0>
           %w2 = const f32[1,3,5,7] splat<2.0>
           %unused = const f32[9] splat<3.0>
           %a = Mul(%x, %w2)
           %b = Relu(%a)
           %c = Add(%a, %b)
           %y = Relu(%c)
           %z = Relu(%w1)
         }",
    );
    assert_eq!(loc(&g, &p, "unused"), Location::Unused);
    assert_eq!(p.weights.len(), 2);
    assert_eq!(p.weights_bytes, 64 + 448);
    for w in &p.weights {
        assert_eq!(w.offset % ALIGNMENT, 0);
    }
    for name in ["a", "b", "c", "z"] {
        assert_eq!(arena_offset(&g, &p, name) % ALIGNMENT, 0, "%{name}");
    }
    assert_eq!(p.arena_bytes % ALIGNMENT, 0);
}

#[test]
fn the_checker_rejects_overlapping_live_tensors() {
    let (g, mut p) = planned(
        "graph diamond(%x: f32[1,8,16,16]) -> (%e) {
           %a = Relu(%x)
           %b = Relu(%a)
           %c = Add(%a, %b)
           %e = Relu(%c)
         }",
    );
    let b = id(&g, "b");
    p.slots[b.index()] = Location::Arena(arena_offset(&g, &p, "a"));
    assert!(
        matches!(p.verify(&g), Err(PlanError::Check(_))),
        "{:?}",
        p.verify(&g)
    );
    // An alias the graph does not justify is rejected too.
    let (g, mut p) = planned(
        "graph two(%x: f32[1,8]) -> (%y) {
           %a = Relu(%x)
           %b = Relu(%x)
           %y = Add(%a, %b)
         }",
    );
    p.slots[id(&g, "b").index()] = Location::Alias {
        of: id(&g, "a"),
        offset: 0,
    };
    assert!(p.verify(&g).is_err());
    // Misalignment.
    let (g, mut p) = planned(
        "graph one(%x: f32[1,8]) -> (%y) {
           %a = Relu(%x)
           %y = Relu(%a)
         }",
    );
    p.arena_bytes += 4;
    p.slots[id(&g, "a").index()] = Location::Arena(4);
    assert!(p.verify(&g).is_err());
}

/// splitmix64: a tiny deterministic generator (the codegen crate has no proptest).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random DAG of 4-D f32 tensors [1, C, 4, 4] (C random) made of unary ops, same-shape adds,
/// channel concats (and, sometimes, a non-contiguous concat along H), splits and views.
fn random_graph(seed: u64, nodes: usize) -> Graph {
    let mut rng = Rng(seed);
    let mut g = Graph::new(format!("random{seed}"));
    let c0 = 1 + rng.below(6);
    let x = g
        .add_input("x", TensorType::new(DType::F32, vec![1, c0, 4, 4]))
        .unwrap();
    let mut pool = vec![x];
    for k in 0..nodes {
        let out = format!("v{k}");
        let pick = pool[pool.len() - 1 - rng.below(pool.len().min(6))];
        let dims = g.value(pick).ty.dims().to_vec();
        let (op, inputs, names) = match rng.below(7) {
            0 => {
                let same: Vec<ValueId> = pool
                    .iter()
                    .copied()
                    .filter(|&v| g.value(v).ty.dims() == dims.as_slice())
                    .collect();
                let other = same[rng.below(same.len())];
                (
                    Op::Binary(qcc_ir::BinaryOp::Add),
                    vec![pick, other],
                    vec![out],
                )
            }
            1 => {
                let other = pool[rng.below(pool.len())];
                let od = g.value(other).ty.dims().to_vec();
                let axis = if od[2] == dims[2] && rng.below(4) > 0 {
                    1
                } else {
                    2
                };
                let ok = (0..4).all(|d| d == axis || od[d] == dims[d]);
                let other = if ok { other } else { pick };
                (Op::Concat { axis }, vec![pick, other], vec![out])
            }
            2 if dims[1] >= 2 => {
                let first = 1 + rng.below(dims[1] - 1);
                let sizes = vec![first, dims[1] - first];
                let op = Op::Split { axis: 1, sizes };
                (op, vec![pick], vec![format!("{out}a"), format!("{out}b")])
            }
            3 => {
                let shape = vec![1, dims[1] as i64, dims[2] as i64, dims[3] as i64];
                let op = Op::Reshape {
                    shape,
                    allow_zero: false,
                };
                (op, vec![pick], vec![out])
            }
            4 => (Op::Identity, vec![pick], vec![out]),
            _ => (Op::Activation(Activation::Relu), vec![pick], vec![out]),
        };
        let node = g.add_node(format!("n{k}"), op, inputs, names).unwrap();
        pool.extend(g.node(node).outputs.iter().copied());
    }
    let mut outputs = vec![*pool.last().unwrap()];
    for _ in 0..rng.below(3) {
        outputs.push(pool[rng.below(pool.len())]);
    }
    g.set_outputs(outputs);
    g
}

#[test]
fn random_dags_plan_soundly() {
    for seed in 0..400u64 {
        let g = random_graph(seed, 5 + (seed as usize % 40));
        let p = plan(&g).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        p.verify(&g)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", p.report(&g)));
        assert!(p.arena_bytes <= p.naive_bytes, "seed {seed}");
    }
}

fn conv_attrs(k: usize, stride: usize) -> ConvAttrs {
    ConvAttrs {
        kernel: vec![k, k],
        strides: vec![stride; 2],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![k / 2; 4]),
        group: 1,
    }
}

/// A fused convolution with splat weights; `residual` is added before the ReLU.
fn conv(
    g: &mut Graph,
    x: ValueId,
    out_c: usize,
    k: usize,
    stride: usize,
    residual: Option<ValueId>,
    name: &str,
) -> ValueId {
    let in_c = g.value(x).ty.dims()[1];
    let w = Tensor::from_f32(&[out_c, in_c, k, k], vec![0.01; out_c * in_c * k * k]);
    let w = g.add_constant(format!("{name}.w"), w).unwrap();
    let b = g
        .add_constant(
            format!("{name}.b"),
            Tensor::from_f32(&[out_c], vec![0.0; out_c]),
        )
        .unwrap();
    let mut inputs = vec![x, w, b];
    inputs.extend(residual);
    let op = Op::FusedConv {
        conv: conv_attrs(k, stride),
        residual: residual.is_some(),
        activation: Some(Activation::Relu),
    };
    let node = g
        .add_node(name, op, inputs, vec![name.to_string()])
        .unwrap();
    g.node(node).outputs[0]
}

/// ResNet-50's body at 56×56 input resolution scaled down: bottleneck blocks in 3 stages.
fn resnet_like() -> Graph {
    let mut g = Graph::new("resnet_like");
    let mut x = g
        .add_input("x", TensorType::new(DType::F32, vec![1, 64, 56, 56]))
        .unwrap();
    for (stage, (blocks, width)) in [(3, 64), (4, 128), (6, 256)].into_iter().enumerate() {
        for block in 0..blocks {
            let name = format!("s{stage}b{block}");
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let skip = if block == 0 {
                conv(
                    &mut g,
                    x,
                    width * 4,
                    1,
                    stride,
                    None,
                    &format!("{name}.down"),
                )
            } else {
                x
            };
            let a = conv(&mut g, x, width, 1, 1, None, &format!("{name}.c1"));
            let b = conv(&mut g, a, width, 3, stride, None, &format!("{name}.c2"));
            x = conv(
                &mut g,
                b,
                width * 4,
                1,
                1,
                Some(skip),
                &format!("{name}.c3"),
            );
        }
    }
    let f = g
        .add_node(
            "flat",
            Op::Flatten { axis: 1 },
            vec![x],
            vec!["flat".into()],
        )
        .unwrap();
    let f = g.node(f).outputs[0];
    g.set_outputs(vec![f]);
    g
}

#[test]
fn resnet_like_graph_reuses_most_of_the_arena() {
    let g = resnet_like();
    let p = plan(&g).unwrap();
    p.verify(&g).unwrap();
    let largest = g
        .values()
        .filter(|(v, _)| matches!(p.location(*v), Location::Arena(_)))
        .map(|(_, v)| v.ty.byte_size())
        .max()
        .unwrap();
    println!(
        "resnet_like: {} nodes, weights {} B, arena {} B, naive {} B ({:.1}%), largest {} B",
        g.node_count(),
        p.weights_bytes,
        p.arena_bytes,
        p.naive_bytes,
        100.0 * p.arena_bytes as f64 / p.naive_bytes as f64,
        largest
    );
    // A bottleneck block needs its input (the skip), two narrow tensors and the output.
    assert!(p.arena_bytes >= 2 * largest);
    assert!(p.arena_bytes * 5 < p.naive_bytes, "{}", p.report(&g));
    // The final convolution writes the output buffer through the Flatten view.
    let last = g.value_by_name("s2b5.c3").unwrap();
    assert_eq!(
        p.location(last),
        Location::Alias {
            of: g.outputs()[0],
            offset: 0
        }
    );
}

#[test]
fn long_residual_chain_needs_constant_memory() {
    let mut g = Graph::new("long");
    let mut x = g
        .add_input("x", TensorType::new(DType::F32, vec![1, 16, 8, 8]))
        .unwrap();
    for i in 0..200 {
        let a = conv(&mut g, x, 16, 3, 1, None, &format!("b{i}.c1"));
        x = conv(&mut g, a, 16, 3, 1, Some(x), &format!("b{i}.c2"));
    }
    g.set_outputs(vec![x]);
    let p = plan(&g).unwrap();
    p.verify(&g).unwrap();
    // Input of a block (the skip), the inner tensor and the block output: three buffers.
    assert_eq!(p.arena_bytes, 3 * 4096);
    assert_eq!(p.naive_bytes, 399 * 4096);
    let report = p.report(&g);
    assert!(report.contains("arena:   12288 bytes"), "{report}");
}
