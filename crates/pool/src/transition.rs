//! The transition table of a device's life cycle (the states and events are in [`crate::state`]):
//! one pure function from (state, event, now) to (next state, commands), every pair listed.

use std::collections::BTreeMap;

use pcipool_fabric::LeaseId;

use crate::state::{
    Command, DeviceState, Epoch, Event, Lease, Millis, ReturnReason, TransitionError, WorkflowId,
};

fn illegal(state: &DeviceState, event: &Event) -> TransitionError {
    TransitionError::Illegal {
        state: state.name(),
        event: event.name(),
    }
}

fn notify_all(leases: &[Lease], what: &str) -> Vec<Command> {
    leases
        .iter()
        .map(|l| Command::NotifyBorrower {
            lease: l.id,
            borrower: l.borrower,
            what: what.to_owned(),
        })
        .collect()
}

/// The result of a transition.
pub type Outcome = Result<(DeviceState, Vec<Command>), TransitionError>;

/// The transition table. Pure: state and event in, next state and commands out. Every (state, event)
/// pair is listed; the illegal ones are grouped explicitly (no catch-all), so adding a state or event is
/// a compile error until its row is written.
pub fn apply(state: &DeviceState, event: &Event, now: Millis) -> Outcome {
    use DeviceState as S;
    use Event as E;
    match (state, event) {
        // Discovered --qualify--> Qualified | Rejected; re-qualification is allowed while not in use.
        (
            S::Discovered | S::Qualified { .. } | S::Rejected { .. },
            E::Qualified { models, reasons },
        ) => {
            let next = if models.is_empty() {
                S::Rejected {
                    reasons: reasons.clone(),
                }
            } else {
                S::Qualified {
                    models: models.clone(),
                }
            };
            Ok((next, vec![]))
        }
        // Qualified --pool add--> Available
        (S::Qualified { .. }, E::AddToPool) => Ok((S::Available, vec![])),
        // Available --assign--> Lending
        (S::Available, E::Assign { lease, workflow }) => Ok((
            S::Lending {
                lease: lease.clone(),
                workflow: *workflow,
            },
            vec![Command::StartLend {
                lease: lease.clone(),
                workflow: *workflow,
            }],
        )),
        (
            S::Lending { .. } | S::Lent { .. } | S::Shared { .. } | S::Returning { .. },
            E::Assign { .. },
        ) => Err(TransitionError::Conflict {
            state: state.name(),
        }),
        // Lending --lent--> Lent
        (
            S::Lending { lease, workflow },
            E::LendDone {
                workflow: w,
                attached,
            },
        ) if w == workflow => Ok((
            S::Lent {
                lease: Lease {
                    attached: *attached,
                    ..lease.clone()
                },
            },
            vec![],
        )),
        // Lending --failed (compensated)--> Available | Quarantined (the compensation's reset failed)
        (
            S::Lending { lease, workflow },
            E::LendFailed {
                workflow: w,
                reason,
                quarantine,
            },
        ) if w == workflow => Ok((
            if *quarantine {
                S::Quarantined {
                    reason: format!("reset failed while undoing a lend: {reason}"),
                }
            } else {
                S::Available
            },
            vec![Command::NotifyBorrower {
                lease: lease.id,
                borrower: lease.borrower,
                what: format!("lend failed: {reason}"),
            }],
        )),
        (S::Lending { .. }, E::LendDone { .. } | E::LendFailed { .. }) => {
            Err(TransitionError::Unknown { what: "workflow" })
        }
        // Available --share--> Shared; Shared --share--> Shared (up to max)
        (S::Available, E::Share { lease, max_sharers }) => {
            if *max_sharers == 0 {
                return Err(TransitionError::SharersFull { max: 0 });
            }
            let mut leases = BTreeMap::new();
            leases.insert(lease.id, lease.clone());
            Ok((
                S::Shared {
                    leases,
                    max_sharers: *max_sharers,
                },
                vec![],
            ))
        }
        (
            S::Shared {
                leases,
                max_sharers,
            },
            E::Share {
                lease,
                max_sharers: wanted,
            },
        ) => {
            if leases.len() >= usize::try_from(*max_sharers).unwrap_or(usize::MAX) {
                return Err(TransitionError::SharersFull { max: *max_sharers });
            }
            // An exclusive borrow (one sharer) fails while anyone holds the device.
            if crate::schedule::exclusive(Some(*wanted)) {
                return Err(TransitionError::Conflict {
                    state: state.name(),
                });
            }
            let mut leases = leases.clone();
            leases.insert(lease.id, lease.clone());
            Ok((
                S::Shared {
                    leases,
                    max_sharers: *max_sharers,
                },
                vec![],
            ))
        }
        // Shared(one exclusive lease) --downgrade--> Shared(same lease, higher limit)
        (
            S::Shared {
                leases,
                max_sharers,
            },
            E::Downgrade {
                lease,
                max_sharers: wanted,
            },
        ) => {
            if !leases.contains_key(lease) {
                return Err(TransitionError::Unknown { what: "lease" });
            }
            if *max_sharers != 1 || *wanted < 2 {
                return Err(illegal(state, event));
            }
            Ok((
                S::Shared {
                    leases: leases.clone(),
                    max_sharers: *wanted,
                },
                vec![],
            ))
        }
        (S::Lending { .. } | S::Lent { .. } | S::Returning { .. }, E::Share { .. }) => {
            Err(TransitionError::Conflict {
                state: state.name(),
            })
        }
        // Lent --release--> Returning
        (
            S::Lent { lease },
            E::Release {
                lease: id,
                workflow,
            },
        ) if *id == lease.id => {
            start_return(vec![lease.clone()], ReturnReason::Released, *workflow)
        }
        // Shared --release--> Shared (one fewer) | Returning (last one)
        (
            S::Shared {
                leases,
                max_sharers,
            },
            E::Release {
                lease: id,
                workflow,
            },
        ) => {
            let Some(gone) = leases.get(id) else {
                return Err(TransitionError::Unknown { what: "lease" });
            };
            if leases.len() == 1 {
                return start_return(vec![gone.clone()], ReturnReason::Released, *workflow);
            }
            let mut rest = leases.clone();
            rest.remove(id);
            Ok((
                S::Shared {
                    leases: rest,
                    max_sharers: *max_sharers,
                },
                vec![Command::UnmapSharer {
                    lease: gone.clone(),
                }],
            ))
        }
        (S::Lent { .. }, E::Release { .. }) => Err(TransitionError::Unknown { what: "lease" }),
        // Heartbeats renew; a stale epoch is a fenced borrower.
        (S::Lent { lease }, E::Heartbeat { lease: id, epoch }) => {
            let renewed = renew(lease, *id, *epoch, now)?;
            Ok((S::Lent { lease: renewed }, vec![]))
        }
        (S::Lending { lease, workflow }, E::Heartbeat { lease: id, epoch }) => {
            let renewed = renew(lease, *id, *epoch, now)?;
            Ok((
                S::Lending {
                    lease: renewed,
                    workflow: *workflow,
                },
                vec![],
            ))
        }
        (
            S::Shared {
                leases,
                max_sharers,
            },
            E::Heartbeat { lease: id, epoch },
        ) => {
            let current = leases
                .get(id)
                .ok_or(TransitionError::Unknown { what: "lease" })?;
            let renewed = renew(current, *id, *epoch, now)?;
            let mut leases = leases.clone();
            leases.insert(*id, renewed);
            Ok((
                S::Shared {
                    leases,
                    max_sharers: *max_sharers,
                },
                vec![],
            ))
        }
        // Tick: expire what is past its time. Data safety first: the return unmaps before it resets.
        (S::Lent { lease }, E::Tick { workflow }) => {
            if lease.expires_at <= now {
                start_return(vec![lease.clone()], ReturnReason::Expired, *workflow)
            } else {
                Ok((state.clone(), vec![]))
            }
        }
        (S::Lending { lease, .. }, E::Tick { workflow }) => {
            if lease.expires_at <= now {
                start_return(vec![lease.clone()], ReturnReason::Expired, *workflow)
            } else {
                Ok((state.clone(), vec![]))
            }
        }
        (
            S::Shared {
                leases,
                max_sharers,
            },
            E::Tick { workflow },
        ) => {
            let (expired, live): (Vec<&Lease>, Vec<&Lease>) =
                leases.values().partition(|l| l.expires_at <= now);
            if expired.is_empty() {
                return Ok((state.clone(), vec![]));
            }
            if live.is_empty() {
                return start_return(
                    expired.into_iter().cloned().collect(),
                    ReturnReason::Expired,
                    *workflow,
                );
            }
            let commands = expired
                .iter()
                .map(|l| Command::UnmapSharer {
                    lease: (*l).clone(),
                })
                .collect();
            let rest = live.into_iter().map(|l| (l.id, l.clone())).collect();
            Ok((
                S::Shared {
                    leases: rest,
                    max_sharers: *max_sharers,
                },
                commands,
            ))
        }
        (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Tick { .. },
        ) => Ok((state.clone(), vec![])),
        // Fence: end every lease now.
        (S::Lent { lease } | S::Lending { lease, .. }, E::Fence { workflow }) => {
            start_return(vec![lease.clone()], ReturnReason::Fenced, *workflow)
        }
        (S::Shared { leases, .. }, E::Fence { workflow }) => start_return(
            leases.values().cloned().collect(),
            ReturnReason::Fenced,
            *workflow,
        ),
        // Returning --returned--> Available
        (S::Returning { workflow, .. }, E::ReturnDone { workflow: w }) if w == workflow => {
            Ok((S::Available, vec![]))
        }
        // Returning --reset failed--> escalate once, then quarantine.
        (
            S::Returning {
                leases,
                reason,
                workflow,
                escalated,
            },
            E::ReturnFailed {
                workflow: w,
                reason: why,
                escalated: tried,
            },
        ) if w == workflow => {
            if *escalated || *tried {
                Ok((
                    S::Quarantined {
                        reason: format!("reset failed after escalation: {why}"),
                    },
                    vec![],
                ))
            } else {
                Ok((
                    S::Returning {
                        leases: leases.clone(),
                        reason: *reason,
                        workflow: *workflow,
                        escalated: true,
                    },
                    vec![Command::StartReturn {
                        leases: leases.clone(),
                        reason: *reason,
                        workflow: *workflow,
                        escalate: true,
                    }],
                ))
            }
        }
        (S::Returning { .. }, E::ReturnDone { .. } | E::ReturnFailed { .. }) => {
            Err(TransitionError::Unknown { what: "workflow" })
        }
        // Faults quarantine; a held device's borrowers are told and fenced first by the return path.
        (S::Lent { .. } | S::Lending { .. } | S::Shared { .. }, E::Fault { reason }) => {
            let leases: Vec<Lease> = state.leases().into_iter().cloned().collect();
            let mut commands = notify_all(&leases, &format!("device fault: {reason}"));
            commands.push(Command::Unmap { leases });
            Ok((
                S::Quarantined {
                    reason: reason.clone(),
                },
                commands,
            ))
        }
        (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Maintenance
            | S::Local,
            E::Fault { reason },
        ) => Ok((
            S::Quarantined {
                reason: reason.clone(),
            },
            vec![],
        )),
        // Lender lost: a device in the pool is Lost, whatever it was doing; its leases end. A device
        // outside the pool keeps the state an operator or qualification gave it (a quarantine, a drain,
        // a rejection must survive the lender's absence: Lost comes back as Available).
        (
            S::Lost { .. }
            | S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Quarantined { .. }
            | S::Maintenance
            | S::Local,
            E::LenderLost,
        ) => Ok((state.clone(), vec![])),
        (
            S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. },
            E::LenderLost,
        ) => {
            // Its leases end now: borrowers are told and cut off (windows unmapped, a whole device
            // detached from the borrower), so no borrower keeps a device no live lease covers.
            let leases: Vec<Lease> = state.leases().into_iter().cloned().collect();
            let mut commands = notify_all(&leases, "lender lost");
            if !leases.is_empty() {
                commands.push(Command::Unmap {
                    leases: leases.clone(),
                });
            }
            Ok((S::Lost { leases }, commands))
        }
        (S::Lost { leases }, E::LenderBack { workflow }) => {
            if leases.is_empty() {
                Ok((S::Available, vec![]))
            } else {
                start_return(leases.clone(), ReturnReason::Fenced, *workflow)
            }
        }
        // Drain.
        (S::Available, E::Drain { to_local }) => {
            Ok((if *to_local { S::Local } else { S::Maintenance }, vec![]))
        }
        (S::Maintenance | S::Local, E::Undrain) => Ok((S::Available, vec![])),
        (S::Quarantined { .. }, E::ClearQuarantine) => Ok((S::Available, vec![])),
        // Everything else is illegal, listed per event.
        (
            S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Qualified { .. },
        )
        | (
            S::Discovered
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::AddToPool,
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Assign { .. } | E::Share { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::LendDone { .. } | E::LendFailed { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Release { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Heartbeat { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Fence { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::ReturnDone { .. } | E::ReturnFailed { .. },
        )
        | (S::Lost { .. }, E::Fault { .. })
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Maintenance
            | S::Local,
            E::LenderBack { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Drain { .. },
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. },
            E::Undrain,
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Shared { .. }
            | S::Returning { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::ClearQuarantine,
        )
        | (
            S::Discovered
            | S::Qualified { .. }
            | S::Rejected { .. }
            | S::Available
            | S::Lending { .. }
            | S::Lent { .. }
            | S::Returning { .. }
            | S::Quarantined { .. }
            | S::Lost { .. }
            | S::Maintenance
            | S::Local,
            E::Downgrade { .. },
        ) => Err(illegal(state, event)),
    }
}

fn renew(lease: &Lease, id: LeaseId, epoch: Epoch, now: Millis) -> Result<Lease, TransitionError> {
    if lease.id != id {
        return Err(TransitionError::Unknown { what: "lease" });
    }
    if epoch < lease.epoch {
        return Err(TransitionError::StaleEpoch {
            got: epoch,
            current: lease.epoch,
        });
    }
    let mut renewed = lease.clone();
    renewed.expires_at = now.saturating_add(lease.ttl).max(lease.expires_at);
    Ok(renewed)
}

fn start_return(leases: Vec<Lease>, reason: ReturnReason, workflow: WorkflowId) -> Outcome {
    let mut commands = if reason == ReturnReason::Released {
        Vec::new()
    } else {
        notify_all(
            &leases,
            match reason {
                ReturnReason::Expired => "lease expired",
                ReturnReason::Fenced | ReturnReason::Released => "lease fenced",
            },
        )
    };
    commands.push(Command::StartReturn {
        leases: leases.clone(),
        reason,
        workflow,
        escalate: false,
    });
    Ok((
        DeviceState::Returning {
            leases,
            reason,
            workflow,
            escalated: false,
        },
        commands,
    ))
}
