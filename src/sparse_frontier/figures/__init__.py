"""Altair charts of the analysis, one function per figure: data in, chart out (save.py writes them).

flops              Figure 12: FLOPS against length per model
isoflops           Figure 2: score against FLOPS with the Pareto frontier
max_compression    Figure 3: maximum compression across tasks
score_compression  Figure 4: score against compression per task and method
scaling            scaling-law predictions against true held-out accuracy
"""
