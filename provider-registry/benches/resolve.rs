//! Per-request cost of model resolution and the cost of loading a config.
//!
//! Run: `cargo bench -p boo-provider-registry --bench resolve`

use std::hint::black_box;

use boo_model_ref::{Inventory, InventoryModel, ModelId, ProviderId};
use boo_provider_registry::{MapEnv, from_json_str};
use criterion::{Criterion, criterion_group, criterion_main};

const EXAMPLE: &str = include_str!("../../examples/boocontrol.example.json");

fn bench(c: &mut Criterion) {
    let env = MapEnv::new().with("DEEPSEEK_API_KEY", "sk-bench");
    let reg = from_json_str(EXAMPLE, &env).unwrap().registry;
    let mut inv = Inventory::new();
    for p in ["sam-desktop", "embedding"] {
        let models = (0..50)
            .map(|i| InventoryModel::new(format!("model-{i}-Q4_K_M")))
            .collect();
        inv.set_provider(ProviderId::new(p).unwrap(), models);
    }
    inv.set_provider(
        ProviderId::new("embedding").unwrap(),
        (0..50)
            .map(|i| InventoryModel::new(format!("emb-{i}")))
            .chain([InventoryModel::new("only-here")])
            .collect(),
    );

    c.bench_function("parse composite", |b| {
        b.iter(|| ModelId::parse(black_box("sam-desktop/org/Qwen3-8B:Q4_K_M")))
    });
    c.bench_function("resolve composite", |b| {
        b.iter(|| reg.resolve(black_box("embedding/deepseek-r1-qwen3-8b"), None))
    });
    c.bench_function("resolve composite via sidecar", |b| {
        b.iter(|| reg.resolve(black_box("embedding/bge-m3"), None))
    });
    c.bench_function("resolve bare id, 100-model inventory", |b| {
        b.iter(|| reg.resolve(black_box("only-here"), Some(&inv)))
    });
    c.bench_function("load example config", |b| {
        b.iter(|| from_json_str(black_box(EXAMPLE), &env))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
