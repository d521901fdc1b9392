//! enforcer kernel programs.
//!
//! Two TCX classifiers on each workload's host-side interface. Entry points are thin:
//! `verdict::run` holds the decision, `parse` the header walk, `maps` the map
//! definitions shared (by name) with the agent.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use enforcer_common::direction;

/// TCX ingress of the host-side interface: packets the workload sends.
#[classifier]
fn enf_from_wl(ctx: TcContext) -> i32 {
    verdict::run(&ctx, direction::EGRESS)
}

/// TCX egress of the host-side interface: packets the workload receives.
#[classifier]
fn enf_to_wl(ctx: TcContext) -> i32 {
    verdict::run(&ctx, direction::INGRESS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Dual-licensed so the GPL-only helpers stay available to the verifier.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
