//! Ordering: automatic dependencies order conflicting accesses across engines; an
//! instruction issued without them (no_sync) that conflicts with an unordered earlier
//! access is reported as a race (RAW, WAR, WAW); explicit ordering removes the race.
//! Also: unwritten on-chip memory reads as NaN.

use xkern_core::DType;
use xkern_neuron_sim::{Engine, Hazard, IssueOptions, Mode, NeuronConfig, Simulator};

fn sim() -> Simulator {
    Simulator::new(NeuronConfig::trn1(), Mode::Functional)
}

#[test]
fn synced_read_waits_for_the_dma_and_reports_no_race() {
    let mut s = sim();
    let h = s
        .hbm_from_f32(128, 256, DType::BF16, &vec![2.0; 128 * 256])
        .unwrap();
    let t = s.sbuf(128, 256, DType::BF16).unwrap();
    let u = s.sbuf(128, 256, DType::F32).unwrap();
    let load = s.dma_copy(t, h.block(0, 128, 0, 256).unwrap()).unwrap();
    let copy = s.tensor_copy(Engine::Vector, &u, &t).unwrap();
    let r = s.records();
    assert!(r[copy.0 as usize].start_ns >= r[load.0 as usize].end_ns);
    assert!(s.races().is_empty());
    assert!(s.read_tile(&u).unwrap().iter().all(|v| *v == 2.0));
}

#[test]
fn planted_read_after_write_race_is_reported() {
    let mut s = sim();
    let h = s
        .hbm_from_f32(128, 256, DType::BF16, &vec![2.0; 128 * 256])
        .unwrap();
    let t = s.sbuf(128, 256, DType::BF16).unwrap();
    let u = s.sbuf(128, 256, DType::F32).unwrap();
    let load = s.dma_copy(t, h.block(0, 128, 0, 256).unwrap()).unwrap();
    s.next(IssueOptions {
        no_sync: true,
        ..Default::default()
    });
    // Reads through an aliasing view (the second half) without waiting for the DMA.
    let copy = s
        .tensor_copy(
            Engine::Vector,
            &u.cols(0, 128).unwrap(),
            &t.cols(128, 128).unwrap(),
        )
        .unwrap();
    let races = s.races();
    assert_eq!(races.len(), 1, "{races:?}");
    assert_eq!(races[0].hazard, Hazard::ReadAfterWrite);
    assert_eq!((races[0].first, races[0].second), (load, copy));
    assert!(races[0].to_string().contains("dma_copy"), "{}", races[0]);
    // On the timeline the copy indeed overlaps the DMA.
    let r = s.records();
    assert!(r[copy.0 as usize].start_ns < r[load.0 as usize].end_ns);
    assert_eq!(s.profile().races, 1);
}

#[test]
fn planted_write_after_read_and_write_after_write_races_are_reported() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    let u = s.sbuf(128, 64, DType::F32).unwrap();
    s.memset(Engine::Vector, &t, 1.0).unwrap();
    s.tensor_copy(Engine::Vector, &u, &t).unwrap(); // vector reads t
    s.next(IssueOptions {
        no_sync: true,
        ..Default::default()
    });
    s.memset(Engine::GpSimd, &t, 3.0).unwrap(); // GpSimd overwrites t: WAR and WAW
    let hazards: Vec<Hazard> = s.races().iter().map(|r| r.hazard).collect();
    assert!(hazards.contains(&Hazard::WriteAfterRead), "{hazards:?}");
    assert!(hazards.contains(&Hazard::WriteAfterWrite), "{hazards:?}");
}

#[test]
fn explicit_ordering_removes_the_race() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    let w = s.memset(Engine::Vector, &t, 1.0).unwrap();
    s.next(IssueOptions {
        no_sync: true,
        after: vec![w],
        ..Default::default()
    });
    s.memset(Engine::GpSimd, &t, 2.0).unwrap();
    assert!(s.races().is_empty(), "{:?}", s.races());
    // A transitive path (via a third engine) also orders the two.
    let u = s.sbuf(128, 64, DType::F32).unwrap();
    let a = s.memset(Engine::Vector, &u, 1.0).unwrap();
    let b = s.tensor_copy(Engine::Scalar, &t, &u).unwrap(); // scalar after vector (RAW on u)
    s.next(IssueOptions {
        no_sync: true,
        after: vec![b],
        ..Default::default()
    });
    s.memset(Engine::GpSimd, &u, 5.0).unwrap(); // conflicts with a; ordered through b
    assert!(s.races().is_empty(), "{:?} {a:?}", s.races());
}

#[test]
fn same_engine_accesses_never_race() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    s.memset(Engine::Vector, &t, 1.0).unwrap();
    s.next(IssueOptions {
        no_sync: true,
        ..Default::default()
    });
    s.memset(Engine::Vector, &t, 2.0).unwrap();
    assert!(s.races().is_empty());
}

#[test]
fn reused_freed_memory_waits_for_its_old_readers() {
    let mut s = sim();
    let t = s.sbuf(128, 4096, DType::F32).unwrap();
    let u = s.sbuf(128, 4096, DType::F32).unwrap();
    s.memset(Engine::Vector, &t, 1.0).unwrap();
    let read = s.tensor_copy(Engine::Vector, &u, &t).unwrap();
    s.free(&t).unwrap();
    let again = s.sbuf(128, 4096, DType::F32).unwrap(); // same bytes as t
    let w = s.memset(Engine::GpSimd, &again, 0.0).unwrap();
    let r = s.records();
    assert!(r[w.0 as usize].start_ns >= r[read.0 as usize].end_ns);
    assert!(s.races().is_empty());
}

#[test]
fn unwritten_sbuf_and_psum_read_as_nan() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::BF16).unwrap();
    assert!(s.read_tile(&t).unwrap().iter().all(|v| v.is_nan()));
    s.memset(Engine::Vector, &t.cols(0, 32).unwrap(), 0.0)
        .unwrap();
    let v = s.read_tile(&t).unwrap();
    assert!(v[..32].iter().all(|x| *x == 0.0) && v[32..64].iter().all(|x| x.is_nan()));
    let ps = s.psum(128, 512, DType::F32).unwrap();
    assert!(s.read_tile(&ps).unwrap().iter().all(|v| v.is_nan()));
    // NaN flows through arithmetic: copying unwritten memory yields NaN.
    let u = s.sbuf(128, 64, DType::F32).unwrap();
    s.tensor_copy(Engine::Vector, &u, &t).unwrap();
    assert!(s.read_tile(&u).unwrap()[40].is_nan());
    // A reallocation of freed memory is poisoned again.
    s.free(&u).unwrap();
    let w = s.sbuf(128, 64, DType::F32).unwrap();
    assert!(s.read_tile(&w).unwrap().iter().all(|v| v.is_nan()));
}
