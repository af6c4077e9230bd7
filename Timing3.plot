set output 'Timing3.svg
set terminal svg
set multiplot
set grid
set title "Clients end date"
set xlabel "audio cycles"
set ylabel "usec"
plot "/tmp/rf/profiler.log" using 1 title "Audio period" with lines, "/tmp/rf/profiler.log" using 8 title "rtupscale-capture/54" with lines, "/tmp/rf/profiler.log" using 16 title "pacat/76" with lines, "/tmp/rf/profiler.log" using 24 title "rtupscale-capture/61" with lines, "/tmp/rf/profiler.log" using 32 title "rtupscale-capture/56" with lines
unset multiplot
unset output
