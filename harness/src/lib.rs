pub mod diag;
pub mod names;
pub mod netns;
pub mod nl;
pub mod topology;
