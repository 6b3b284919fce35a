"""The peak resident memory of the process that evaluates it, for benches' child processes.

VmHWM (the high-water mark of this process's own memory), not resource.getrusage's ru_maxrss:
Linux carries the forking parent's resident size into the child across exec, so a bench parent
that built a big synthetic cache reported its own size as the child's peak (the audit at
1,000,000 rows read 19.2 GB where its own peak is 8.9 GB). An expression to format into a
child's ``python -c`` code; its value is in kB.
"""
VMHWM_KB = "next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))"
