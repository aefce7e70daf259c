//! Search: MLflow's filter language (`filter`), its translation into bound SQL for any searched
//! table (`sql`), and the searches built on them (`runs`, `model_versions`, `models`). A search
//! reads the tables of the concepts it searches but never writes them.

pub mod filter;
pub mod model_versions;
pub mod models;
pub mod runs;
pub mod sql;
