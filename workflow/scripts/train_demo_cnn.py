"""Train one of the demo's CNNs (registry demo_cnns; d2o.demo_cnn) and record its shape accuracy on the demo dataset."""
from d2o.datasets import read_dataset_zip
from d2o.demo_cnn import train_demo_cnn
from d2o.workflow import from_snakemake

log = from_snakemake(snakemake)
images, labels = read_dataset_zip(snakemake.input[0])
summary = train_demo_cnn(snakemake.params.spec, images.shape[1], images, labels, snakemake.output.model, log,
                         shapes=snakemake.params.shapes)
log.info("%s: shape accuracy %.3f on %s (%.3f on its own training shapes)", snakemake.wildcards.demo_cnn,
         summary["shape_accuracy"], snakemake.input[0], summary["shape_accuracy_train"])
