// What the instances kept warm cost a month, said again as the CPU, memory or count changes
// (the rates are the server's: runway_core's MinInstances).
(function () {
  const cost = document.getElementById('warm-cost');
  const fields = ['min_instances', 'cpu', 'memory'].map((id) => document.getElementById(id));
  function say() {
    const count = Number(fields[0].value);
    if (count === 0) {
      cost.textContent = 'No instance is kept warm: the app costs nothing while nobody uses it, and the first visit after a quiet spell waits for it to start.';
      return;
    }
    const cpus = Number(fields[1].value);
    const memory = fields[2].value;
    const gib = memory.endsWith('Mi') ? Number(memory.slice(0, -2)) / 1024 : Number(memory.slice(0, -2));
    const month = count * (cpus * Number(cost.dataset.vcpuSecond) + gib * Number(cost.dataset.gibSecond)) * Number(cost.dataset.monthSeconds);
    cost.textContent = 'Keeping ' + count + ' instance' + (count === 1 ? '' : 's') + ' warm costs about $' + month.toFixed(2) + ' a month with these CPUs and memory (Cloud Run\'s idle rate, Tier 1 list price), on top of what serving visitors costs.';
  }
  for (const field of fields) field.addEventListener('change', say);
})();
