"""Choose a run's lowest-FID snapshot (the authors' released checkpoints are their lowest-FID ones) and link it as
<experiment>/best/model.safetensors, with what was chosen in best/snapshot.json."""
from d2o.io import atomic_write_json
from d2o.report import best_snapshot
from d2o.run_state import link_or_copy
from d2o.workflow import from_snakemake, read_json

log = from_snakemake(snakemake)
curve = read_json(snakemake.input.curve)
choice = best_snapshot(curve, snakemake.input.snapshots)
link_or_copy(choice["path"], snakemake.output.model)
atomic_write_json(snakemake.output.choice, {**choice, "experiment": snakemake.wildcards.experiment})
log.info("%s: best snapshot at %.3f Mimg (snapshot FID %.4f of %d points)", snakemake.wildcards.experiment,
         choice["mimg"], choice["snapshot_fid"], len(curve["points"]))
