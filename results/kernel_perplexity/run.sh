#!/usr/bin/env bash
# Kernel perplexity of a recipe's domain embeddings from a name-only template
# for each layer × pooling × query × normalisation, and for the encoder baseline.
# Run from the repository root after `cargo build --release`:
#   results/kernel_perplexity/run.sh                      # occupations → grid.tsv
#   results/kernel_perplexity/run.sh ml100k-genre prompts/genre_name.txt grid-genre.tsv
set -euo pipefail
P=${PIPELINE:-./target/release/pipeline}
R=${1:-ml100k-occupation}
T=${2:-prompts/name.txt}
OUT=results/kernel_perplexity/${3:-grid.tsv}
S=$(basename "$T" .txt)
$P data prepare --recipe $R
for L in 30 25 20 15 10 5; do
  $P embed --method none --recipe $R --template $T --epochs 1 --set embed.layer=$L
done
$P embed --method none --recipe $R --template $T --epochs 1 --set 'embed.layer=[10,15,20]'
$P embed --method encoder --recipe $R --template $T
printf 'embed\tmode\tquery\tnormalize\tppl_pooling\tppl_median\tof\td2_min\td2_median\td2_max\n' > $OUT
for E in runs/embed-none-$R-$S-layer{30,25,20,15,10,5,10+15+20}-seed1 runs/embed-encoder-$R-$S-seed1; do
  for mode in plain parameterless; do for q in last mean name; do for n in none standardize whiten; do
    line=$($P pool --recipe $R --from "$E" --mode $mode --query $q --set pool.normalize=$n | grep 'kernel perplexity')
    # "kernel perplexity A of N (w = 1/√h), B (median heuristic); squared distances / h between domains: min X, median Y, max Z"
    vals=$(echo "$line" | sed -E 's/kernel perplexity ([^ ]+) of ([0-9]+) .*, ([^ ]+) \(median heuristic\).*min ([^,]+), median ([^,]+), max (.*)/\1\t\3\t\2\t\4\t\5\t\6/')
    printf '%s\t%s\t%s\t%s\t%s\n' "$(basename "$E")" $mode $q $n "$vals" >> $OUT
  done; done; done
done
