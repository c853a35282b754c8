//! MAGNET's own protobuf messages (`proto/magnet/**`), compiled by prost at build time.
//!
//! Standard Cosmos SDK messages (TxRaw, MsgSend, BaseAccount, …) are not redefined
//! here: they come from `cosmrs::proto`, so any Cosmos client speaks our wire format.

#![allow(clippy::all)]

pub mod magnet {
    pub mod chain {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/magnet.chain.v1.rs"));
        }
    }
    pub mod compute {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/magnet.compute.v1.rs"));
        }
    }
    pub mod gov {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/magnet.gov.v1.rs"));
        }
    }
}
