//! magnet-p2p
