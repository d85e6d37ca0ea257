// mysql2 through warpdrive: text queries, execute() (prepared statements, reused with
// other parameters; through a cached deployment the repeats are hits), a write read
// back, a transaction and a multi-statement query. Exits non-zero on the
// first difference; prints "ok" at the end.
const mysql = require('mysql2/promise');
const assert = require('assert');

const [port, database, password] = process.argv.slice(2);

(async () => {
  const conn = await mysql.createConnection({
    host: '127.0.0.1', port: Number(port), user: 'root', password, database,
    multipleStatements: true,
  });
  await conn.query('CREATE TABLE js (id INT PRIMARY KEY, v VARCHAR(10))');
  await conn.query('INSERT INTO js VALUES (1, "a"), (2, "b"), (3, "c")');
  for (let i = 0; i < 2; i++) {
    const [text] = await conn.query('SELECT v FROM js ORDER BY id');
    assert.deepStrictEqual(text.map((r) => r.v), ['a', 'b', 'c']);
  }
  for (const [id, v] of [[1, 'a'], [3, 'c'], [2, 'b'], [1, 'a']]) {
    const [rows] = await conn.execute('SELECT v FROM js WHERE id = ?', [id]);
    assert.deepStrictEqual(rows, [{ v }]);
  }
  const [[count]] = await conn.execute('SELECT COUNT(*) AS n FROM js WHERE id > ?', [1]);
  assert.strictEqual(count.n, 2);
  await conn.execute('UPDATE js SET v = ? WHERE id = ?', ['z', 1]);
  const [[changed]] = await conn.execute('SELECT v FROM js WHERE id = ?', [1]);
  assert.strictEqual(changed.v, 'z', 'the write is read');
  await conn.execute('UPDATE js SET v = ? WHERE id = ?', ['a', 1]);
  await conn.beginTransaction();
  await conn.execute('INSERT INTO js VALUES (?, ?)', [4, 'd']);
  await conn.rollback();
  const [[after]] = await conn.query('SELECT COUNT(*) AS n FROM js');
  assert.strictEqual(after.n, 3);
  const [results] = await conn.query('SELECT 1 AS one; SELECT 2 AS two');
  assert.deepStrictEqual(results, [[{ one: 1 }], [{ two: 2 }]]);
  await conn.end();
  console.log('ok');
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
