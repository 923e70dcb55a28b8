//! Field positions of the core's named tuples, read by index on the hot path.
//!
//! `Event` (detector/events.py) and `Baseline` (detector/baseline.py) are
//! `NamedTuple`s: a kernel reads a field as a tuple item, which costs a pointer
//! load instead of an attribute lookup. `EVENT_FIELDS` and `BASELINE_FIELDS`
//! are exported so that `tests/test_native_layout.py` checks these positions
//! against the Python classes: a field added there fails that test until it
//! is added here.

use pyo3::prelude::*;

/// `Event._fields`, in order.
pub const EVENT_FIELDS: [&str; 39] = ["event_id", "kind", "ts_ms", "entity", "entity_kind", "entity_class", "source_format", "user", "user_type", "activity", "success", "status_detail", "is_mfa", "session_id", "service", "user_agent", "src_ip", "src_prefix", "src_country", "src_city", "src_lat", "src_lon", "src_asn", "src_as_name", "device_id", "src_hostname", "dst_ip", "dst_hostname", "dst_port", "dst_country", "dst_asn", "dst_internal", "protocol", "direction", "bytes_in", "bytes_out", "packets_in", "packets_out", "duration_ms"];
/// `Baseline._fields`, in order.
pub const BASELINE_FIELDS: [&str; 15] = ["n_seen", "n_learned", "first_ts", "last_ts", "t0", "hours", "hours_total", "seen", "seen_totals", "last_success", "fail_rate", "fail_burst", "new_hosts", "traffic", "signals"];

pub const EV_EVENT_ID: usize = 0;
pub const EV_KIND: usize = 1;
pub const EV_TS_MS: usize = 2;
pub const EV_ENTITY: usize = 3;
pub const EV_ENTITY_KIND: usize = 4;
pub const EV_ENTITY_CLASS: usize = 5;
pub const EV_SOURCE_FORMAT: usize = 6;
pub const EV_USER: usize = 7;
pub const EV_USER_TYPE: usize = 8;
pub const EV_ACTIVITY: usize = 9;
pub const EV_SUCCESS: usize = 10;
pub const EV_STATUS_DETAIL: usize = 11;
pub const EV_IS_MFA: usize = 12;
pub const EV_SESSION_ID: usize = 13;
pub const EV_SERVICE: usize = 14;
pub const EV_USER_AGENT: usize = 15;
pub const EV_SRC_IP: usize = 16;
pub const EV_SRC_PREFIX: usize = 17;
pub const EV_SRC_COUNTRY: usize = 18;
pub const EV_SRC_CITY: usize = 19;
pub const EV_SRC_LAT: usize = 20;
pub const EV_SRC_LON: usize = 21;
pub const EV_SRC_ASN: usize = 22;
pub const EV_SRC_AS_NAME: usize = 23;
pub const EV_DEVICE_ID: usize = 24;
pub const EV_SRC_HOSTNAME: usize = 25;
pub const EV_DST_IP: usize = 26;
pub const EV_DST_HOSTNAME: usize = 27;
pub const EV_DST_PORT: usize = 28;
pub const EV_DST_COUNTRY: usize = 29;
pub const EV_DST_ASN: usize = 30;
pub const EV_DST_INTERNAL: usize = 31;
pub const EV_PROTOCOL: usize = 32;
pub const EV_DIRECTION: usize = 33;
pub const EV_BYTES_IN: usize = 34;
pub const EV_BYTES_OUT: usize = 35;
pub const EV_PACKETS_IN: usize = 36;
pub const EV_PACKETS_OUT: usize = 37;
pub const EV_DURATION_MS: usize = 38;

pub const BL_N_SEEN: usize = 0;
pub const BL_N_LEARNED: usize = 1;
pub const BL_FIRST_TS: usize = 2;
pub const BL_LAST_TS: usize = 3;
pub const BL_T0: usize = 4;
pub const BL_HOURS: usize = 5;
pub const BL_HOURS_TOTAL: usize = 6;
pub const BL_SEEN: usize = 7;
pub const BL_SEEN_TOTALS: usize = 8;
pub const BL_LAST_SUCCESS: usize = 9;
pub const BL_FAIL_RATE: usize = 10;
pub const BL_FAIL_BURST: usize = 11;
pub const BL_NEW_HOSTS: usize = 12;
pub const BL_TRAFFIC: usize = 13;
pub const BL_SIGNALS: usize = 14;

/// Exports the field lists, for the layout test.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EVENT_FIELDS", EVENT_FIELDS.to_vec())?;
    m.add("BASELINE_FIELDS", BASELINE_FIELDS.to_vec())?;
    Ok(())
}
