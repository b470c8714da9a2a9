//! Header maps used again on the thread that dropped them.
//!
//! A request that passes through holds two header maps: its own, parsed from the client,
//! and the origin's answer's. Each is two allocations, and the larger (the fields, about
//! 100 bytes each, 1.2 KiB for the smallest map that holds a request and what the proxy
//! adds) is above what glibc's per-thread cache takes (1,032 bytes): every passthrough
//! request paid malloc's and free's slow paths twice (BENCHMARKS.md, issue 15.1). So the
//! fast path's request heads and our origin client's answer heads take their map from this
//! thread's spares, and the two places that are done with such maps (the request phases once
//! passthrough's answer is in, the fast path once an answer's head is written) give them
//! back, emptied.
//!
//! Bounded: at most [`KEPT`] maps per thread, none with room for more than
//! [`MAX_KEPT_FIELDS`] fields or holding more lines than that. A map also keeps room for the
//! extra lines of repeated names (`clear` keeps it), which its count of lines no longer shows
//! once lines were joined or removed: a request's map is judged ([`keepable`]) as the request
//! phases get it, before any line is removed or joined; an answer's extra lines are bounded by
//! the origin client's limits (our HTTP/1.1 client makes room for every line it parses, at
//! most 100; hyper's HTTP/2 client takes 16 KiB of headers, ~500 lines at most). So a spare is
//! usually 1.2-2.5 KiB, at most ~5 KiB without repeated lines, and ~40 KiB at worst (an HTTP/2
//! origin's answer with hundreds of lines removed): 16 per thread. A spare holds no header of
//! the message it served: it is cleared before it is kept.

use std::cell::RefCell;

use http::HeaderMap;

/// Spare maps kept per thread. A request needs two at a time, and a thread serves many
/// requests at once: with four, the spares ran out (and overflowed) as the number in flight
/// went up and down, and three in ten heads still took a new map.
const KEPT: usize = 16;
/// Maps with room for more fields than this, or holding more lines, are dropped, not kept.
const MAX_KEPT_FIELDS: usize = 48;

thread_local! {
    /// This thread's spare maps, empty.
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `capacity` fields: one of this thread's spares when it
/// has one.
pub fn header_map(capacity: usize) -> HeaderMap {
    let spare = SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten();
    match spare {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Whether `map`, given back later, may be kept: it has room and holds few lines. Asked
/// before lines are joined or removed, which leaves their room behind unseen.
pub fn keepable(map: &HeaderMap) -> bool {
    (1..=MAX_KEPT_FIELDS).contains(&map.capacity()) && map.len() <= MAX_KEPT_FIELDS
}

/// Gives back a map that is no longer needed: emptied and kept for [`header_map`], unless
/// this thread has enough spares or the map is not [`keepable`].
pub fn give_back(mut map: HeaderMap) {
    if !keepable(&map) {
        return;
    }
    // Emptied before the spares are borrowed: dropping the values runs no code of ours, but
    // nothing is dropped under the borrow either way.
    map.clear();
    // A thread being torn down has no spares any more: the map is then simply dropped.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{HOST, USER_AGENT};

    /// Runs `test` on a thread of its own, so no other test's spares are seen.
    fn on_own_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().expect("the test passed");
    }

    #[test]
    fn a_map_given_back_is_used_again_empty() {
        on_own_thread(|| {
            let mut map = header_map(8);
            map.insert(HOST, HeaderValue::from_static("secret.example"));
            map.insert(USER_AGENT, HeaderValue::from_static("a"));
            let fields = map.capacity();
            give_back(map);
            let again = header_map(4);
            assert!(
                again.is_empty(),
                "a spare holds nothing of its last message"
            );
            assert_eq!(again.capacity(), fields, "the same map, its room kept");
            let fresh = header_map(4);
            assert!(
                fresh.capacity() < fields,
                "no spare left: a new, smaller map"
            );
        });
    }

    #[test]
    fn a_spare_grows_to_the_room_asked_for() {
        on_own_thread(|| {
            give_back(header_map(4));
            assert!(header_map(40).capacity() >= 40);
        });
    }

    #[test]
    fn spares_are_bounded_in_number_and_size() {
        on_own_thread(|| {
            give_back(HeaderMap::with_capacity(MAX_KEPT_FIELDS * 2));
            assert_eq!(SPARE.with(|spare| spare.borrow().len()), 0, "a large map");
            let mut lines = header_map(8);
            for _ in 0..MAX_KEPT_FIELDS + 1 {
                lines.append(HOST, HeaderValue::from_static("a"));
            }
            assert!(!keepable(&lines), "many lines of one name");
            give_back(lines);
            assert_eq!(SPARE.with(|spare| spare.borrow().len()), 0, "many lines");
            give_back(HeaderMap::new());
            assert_eq!(
                SPARE.with(|spare| spare.borrow().len()),
                0,
                "a map with no room"
            );
            for _ in 0..KEPT + 3 {
                give_back(HeaderMap::with_capacity(8));
            }
            assert_eq!(SPARE.with(|spare| spare.borrow().len()), KEPT);
        });
    }
}
