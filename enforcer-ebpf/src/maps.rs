//! Map definitions. Every map is pinned by name under the agent's pin directory, so
//! enforcement and counters outlive an agent restart.
use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
    },
};
use enforcer_common::{
    capacity,
    config::Config,
    counter::{Counter, CounterKey},
    ct::{CtKey, CtValue, FragKey},
    endpoint::{EndpointInfo, EndpointKey},
    flow::{EVENTS_BYTES, EventLoss, FlowKey, FlowStats, RateState},
    ipcache::{DenyInfo, IpInfo, LpmAddr},
    policy::{PolicyKey, PolicyValue},
};

/// `BPF_F_NO_PREALLOC`: the policy map is sized for the largest policy but usually
/// holds far less; allocate entries as they are written.
const NO_PREALLOC: u32 = 1;

#[map(name = "ENF_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "ENF_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> = HashMap::pinned(capacity::ENDPOINTS, 0);

#[map(name = "ENF_IPCACHE")]
pub static IPCACHE: LpmTrie<LpmAddr, IpInfo> = LpmTrie::pinned(capacity::IPCACHE, 0);

#[map(name = "ENF_DENYLIST")]
pub static DENYLIST: LpmTrie<LpmAddr, DenyInfo> = LpmTrie::pinned(capacity::DENYLIST, 0);

#[map(name = "ENF_POLICY")]
pub static POLICY: HashMap<PolicyKey, PolicyValue> = HashMap::pinned(capacity::POLICY, NO_PREALLOC);

#[map(name = "ENF_CT")]
pub static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(capacity::CT, 0);

#[map(name = "ENF_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, u32> = LruHashMap::pinned(capacity::FRAGS, 0);

#[map(name = "ENF_COUNTERS")]
pub static COUNTERS: PerCpuHashMap<CounterKey, Counter> =
    PerCpuHashMap::pinned(capacity::COUNTERS, 0);

#[map(name = "ENF_FLOWS")]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> =
    LruPerCpuHashMap::pinned(capacity::FLOWS, 0);

#[map(name = "ENF_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map(name = "ENF_EVLOSS")]
pub static EVLOSS: PerCpuArray<EventLoss> = PerCpuArray::pinned(1, 0);

#[map(name = "ENF_EVRATE")]
pub static EVRATE: PerCpuArray<RateState> = PerCpuArray::pinned(1, 0);
