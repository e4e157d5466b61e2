//! Choosing a flow's backend: the tracked choice while its backend stays in the service,
//! else the client's session-affinity record, else Maglev. A leaf shared by forwarding (new
//! flows) and ICMP (errors that only refer to a flow and track nothing new).

use super::{
    conntrack::{Entry, FlowKey, FlowState, Hint},
    maglev::EMPTY,
    snapshot::{Backend, Service},
    snat::Lease,
    state::WorkerState,
    stats::DropReason,
};

/// Marks the protocol byte of a session-affinity entry's key, so it never equals a flow's.
const AFFINITY: u8 = 0x80;

/// The backend of a new flow (or of a tracked one whose backend left): by client address
/// for session affinity, else by the flow hash.
pub(super) fn choose(
    now: u64,
    svc: &Service,
    st: &mut WorkerState,
    key: &FlowKey,
    hash: u64,
) -> Result<u32, DropReason> {
    let Some(timeout) = svc.affinity else { return maglev_pick(svc, hash) };
    let key = FlowKey { src_port: 0, proto: key.proto | AFFINITY, ..*key };
    let akey = key.hash();
    let until = now.saturating_add(timeout);
    if let Some(e) = st.conntrack.lookup(&key, akey, now) {
        if let Some(i) = svc.backend_index(e.backend_key, e.hint.backend()) {
            if svc.backends.get(usize::try_from(i).unwrap_or(usize::MAX)).is_some_and(|b| b.takes_new_flows()) {
                e.hint = e.hint.with_backend(i);
                e.expires = until;
                return Ok(i);
            }
        }
    }
    let pick = maglev_pick(svc, akey)?;
    let backend_key = svc.backends.get(usize::try_from(pick).unwrap_or(usize::MAX)).map_or(0, |b| b.key);
    let hint = Hint::new(u32::MAX, pick);
    let entry = Entry { key, hint, backend_key, state: FlowState::Affinity, ..Entry::default() };
    if let Ok(e) = st.track(entry, akey, now) {
        e.expires = until;
    }
    Ok(pick)
}

/// The backend of the flow `key` (client side) for a packet that only refers to it (an ICMP
/// error): tracked here, else the choice any worker makes for it; tracks nothing new. Also
/// the flow's SNAT port when this worker holds it.
pub(super) fn backend_for_icmp<'s>(
    now: u64,
    svc: &'s Service,
    st: &mut WorkerState,
    key: &FlowKey,
    hash: u64,
) -> Result<(&'s Backend, Option<Lease>), DropReason> {
    let by_index = |i: u32| svc.backends.get(usize::try_from(i).unwrap_or(usize::MAX));
    if let Some(e) = st.conntrack.lookup(key, hash, now) {
        if let Some(b) = svc.backend_index(e.backend_key, e.hint.backend()).and_then(by_index) {
            return Ok((b, e.snat));
        }
    }
    let pick = match svc.affinity {
        Some(_) => {
            let akey = FlowKey { src_port: 0, proto: key.proto | AFFINITY, ..*key };
            let ahash = akey.hash();
            match st.conntrack.lookup(&akey, ahash, now) {
                Some(e) => {
                    svc.backend_index(e.backend_key, e.hint.backend()).map_or_else(|| maglev_pick(svc, ahash), Ok)?
                }
                None => maglev_pick(svc, ahash)?,
            }
        }
        None => maglev_pick(svc, hash)?,
    };
    Ok((by_index(pick).ok_or(DropReason::NoBackend)?, None))
}

fn maglev_pick(svc: &Service, hash: u64) -> Result<u32, DropReason> {
    match svc.table().lookup(hash) {
        EMPTY => Err(DropReason::NoBackend),
        pick => Ok(pick),
    }
}
