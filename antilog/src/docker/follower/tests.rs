use super::*;

#[test]
fn skip_drops_delivered_lines_only() {
    let pos = Position {
        seq: 9,
        ts: 100,
        at_ts: 2,
        file: None,
    };
    let mut s = Skip::from(&pos);
    // The third line at 100 and 101 are new; a copy of a delivered line (99) that
    // comes later is still skipped.
    let got: Vec<bool> = [99, 100, 100, 100, 101, 99, 100, 102]
        .into_iter()
        .map(|ts| s.should_skip(ts))
        .collect();
    assert_eq!(
        got,
        vec![true, true, true, false, false, true, false, false]
    );
    let mut s = Skip::from(&Position::default());
    assert!(!s.should_skip(0));
}

#[test]
fn replays_drop_copies_only() {
    let mut r = Replays::default();
    // 1..=5 read, 5 twice (equal timestamps); then Docker sends 3, 4, 5, 5 again and
    // goes on with 6, 6, 7; then 2 and 1 again.
    let got: Vec<bool> = [1, 2, 3, 4, 5, 5, 3, 4, 5, 5, 6, 6, 7, 2, 1]
        .into_iter()
        .map(|ts| r.is_copy(ts * 10))
        .collect();
    assert_eq!(
        got,
        vec![
            false, false, false, false, false, false, true, true, true, true, false, false, false,
            true, true
        ]
    );
    // The clock stepped back: 15 and 16 were never seen, so they are new lines.
    let mut r = Replays::default();
    let got: Vec<bool> = [10, 20, 15, 16, 20, 25]
        .into_iter()
        .map(|ts| r.is_copy(ts))
        .collect();
    assert_eq!(got, vec![false, false, false, false, false, false]);
}
